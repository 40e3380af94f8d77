"""Training of interactive segmentation models: simulated users, data, and the training loop (issue 4)."""
