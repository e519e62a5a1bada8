"""The embedded corpus: offline code + prose with planted artifacts and a known data order."""
