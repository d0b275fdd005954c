"""Training a router (PyTorch): data -> encoder -> model -> trainer -> export, with evaluation beside."""
