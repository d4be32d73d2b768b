using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

/// <summary>The durable hard state (term and vote).</summary>
internal interface IHardStateStore : IDisposable
{
    /// <summary>The stored hard state, or null on a fresh node.</summary>
    HardState? Load();

    /// <summary>Stores the hard state durably before returning.</summary>
    void Save(HardState state);
}
