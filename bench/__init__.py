"""`python -m bench` (`make bench`): throughput of every stage, as ratios measured in one run."""
