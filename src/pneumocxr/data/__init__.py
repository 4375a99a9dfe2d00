"""Dataset discovery, patient ids, patient-level splits, caching, checks and EDA."""
