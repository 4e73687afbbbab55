"""The service layer: what happens to an order, decided on ports (Protocols), no frameworks."""
