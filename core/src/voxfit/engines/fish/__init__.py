"""Fish Speech (OpenAudio S1): the core's own engine plugin, registered through the same hooks as any other."""
