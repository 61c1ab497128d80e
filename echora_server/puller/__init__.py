"""``echora agent pull``: the agent's side of poll delivery, for an agent with no public URL."""
