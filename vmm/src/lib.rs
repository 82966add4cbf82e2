//! skiff's virtual machine monitor library.
