"""Small utilities with no knowledge of plans or engines: files, caches that prove they are whole, signals, stdout."""
