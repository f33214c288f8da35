"""Training: HF Trainer subclass, GradCache, cross-device gathering, parameter-efficient modes."""
