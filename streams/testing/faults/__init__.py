"""The fault campaign: the whole loop (classify workers, Triton, broker, model watch,
trainer, alert worker) under a seeded schedule of faults and a steady stream."""
