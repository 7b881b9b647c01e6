"""The train loop and what it closes over: task, loss, optimiser, sharding rules, resilience."""
