"""The runner: plans row changes against what was last sent, batches and delivers them."""
