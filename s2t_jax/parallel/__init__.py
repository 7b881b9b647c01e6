"""Devices and processes: the one mesh helper, row placement, multi-host start-up."""
