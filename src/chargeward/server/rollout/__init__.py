"""What goes to the stations: releases, the repository, supply chain, campaigns and their
scheduler, updates, deltas, link budget, local caches.
"""
