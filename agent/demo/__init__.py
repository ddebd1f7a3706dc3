"""The demo: a small instrumented shop, a payment gateway and RFID readers on loopback."""
