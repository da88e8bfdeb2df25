//! Differential-privacy accounting for dpsynth (no tensor dependency).
