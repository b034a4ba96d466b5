"""The rules: pure decisions on events (models, engine, defaults, arming, geo, alerts); no I/O."""
