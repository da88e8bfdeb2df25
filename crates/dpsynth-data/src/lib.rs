//! dpsynth-data
