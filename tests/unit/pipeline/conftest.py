"""The pipeline tests take ``model_dir`` (a random detector and classifier in a temp
folder) from the shared fixtures of ``edgetier.testing``."""
