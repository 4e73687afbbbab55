"""RabbitMQ adapter: topology, the event contract (subscribers and publishers), parking lot."""
