"""The FM interaction kernels (`fm`) and the `bench kernel` measurement harness (`harness`)."""
