//! dpsynth-train
