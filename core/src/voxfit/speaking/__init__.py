"""Speaking: from a plan to audio (loading and checking the engine, the session, synthesis, text, audio files)."""
