// Package contract holds the contract test suite that every provisioning transport
// (internal/httptransport, internal/coaptransport) must pass against the simulated
// Provisioning Service (internal/simcloud). It has no code outside its tests.
package contract
