"""The core: amounts and validation, the exceptions, the reservation primitive, windows,
principals, money policy and the in-process counters. Consumers reach it through ``outlay``."""
