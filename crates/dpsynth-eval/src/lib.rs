//! dpsynth-eval
