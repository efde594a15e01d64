"""The fleet: the station registry, sites, models, tags, support periods and alerts."""
