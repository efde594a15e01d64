"""The HTTP side: REST routers, the dashboard, the error shape, input limits, HTTP security,
authorisation dependencies.
"""
