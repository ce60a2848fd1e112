"""A run's outputs: the scores and error rows, the fingerprints --skip_scored reads, the counts, and the date
partitions with their staging, publishing and the housekeeping between runs."""
