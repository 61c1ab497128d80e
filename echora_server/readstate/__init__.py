"""Read state: how far each member has read each channel, and what is left unread."""
