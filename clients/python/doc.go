// Package python holds the Go tests of the Python client in this directory
// (the allot-client package, import name allot): they start a real allot
// server and run the client's unittest suite against it under every
// CPython 3.10 to 3.13 found on the machine, check that the package's
// version is the server's, and build, install and import its wheel offline.
package python
