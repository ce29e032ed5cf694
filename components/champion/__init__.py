"""ChampionResolver: the model being served, the champion every run's candidates must not fall below."""
