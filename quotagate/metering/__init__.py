"""The response side: usage -> exact cost -> settled reservation -> one durable usage event per request."""
