"""Socket.IO and HTTP transports: thin layers that validate and call the service."""
