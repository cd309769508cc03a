"""Foundations every domain uses: settings, errors, HTTP, secret masking, repository identity."""
