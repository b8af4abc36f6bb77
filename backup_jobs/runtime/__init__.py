"""Running the service: the embedded server and the worker, beat and Flower processes."""
