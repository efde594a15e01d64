"""Shared server building blocks with no server imports: response views (schemas), input checks,
signed URLs, metrics.
"""
