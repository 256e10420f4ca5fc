"""Analysis of measurements (ours and OONI's) against the claims of Freedom on the Net 2021 — Kazakhstan."""
