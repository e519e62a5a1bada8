"""The ground floor: paths, errors, the registry, settings, the lake contract and store, the query layer."""
