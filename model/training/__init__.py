"""Training: Fashion-MNIST's IDX files and a user's own labelled pictures, the architectures, resumable training with
checkpoints, calibration and the figures. The commands that use them are model.train and model.evaluate."""
