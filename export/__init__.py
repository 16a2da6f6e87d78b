"""Export (``yoloworld-export``): not implemented yet, see the project's issue 4."""
