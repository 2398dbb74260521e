"""convexp: convolutional-network experiments on MNIST with a hand-written convolution."""
__version__ = "0.1.0"
