"""Reports: statistics over seeds and leaderboards."""
