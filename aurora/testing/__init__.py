"""Test support that ships with the package: a local stand-in for the Hugging Face Hub (:mod:`aurora.testing.hub`)."""
