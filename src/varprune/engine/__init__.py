"""What the jobs compute: training, distillation, evaluation, cost, latency, export, INT8 and the controls."""
