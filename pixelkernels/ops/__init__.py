"""Public ops: validation, backend dispatch, fake and autograd registration."""
