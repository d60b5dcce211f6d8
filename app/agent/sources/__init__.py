"""Where an agent's objects come from: a real Kubernetes API or a simulated cluster."""
