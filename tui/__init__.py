"""gpudoc's Textual app (installed as gpudoc.tui); only the 'gpudoc tui' command imports it."""
