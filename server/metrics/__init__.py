"""The metrics receiver: takes the desktops' latency (and usage) batches, keeps them, serves them to Prometheus."""
