"""Agents: asyncio tasks with mailboxes, talking through a Bus in the FIPA-ACL spirit."""
