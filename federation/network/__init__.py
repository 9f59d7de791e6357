"""A real federation over the network: certificates, node keys, the Flower config and the processes."""
