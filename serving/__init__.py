"""Serving: render the Triton model repository for a target, and run the real `tritonserver`."""
