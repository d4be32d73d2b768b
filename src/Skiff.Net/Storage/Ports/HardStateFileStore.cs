using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

/// <summary>The hard-state port on the storage's <see cref="HardStateStore"/> (the <c>hardstate</c> file's two
/// checksummed slots).</summary>
internal sealed class HardStateFileStore : IHardStateStore
{
    private readonly HardStateStore _store;

    /// <summary>Wraps an open store (which stays its opener's to dispose).</summary>
    public HardStateFileStore(HardStateStore store) => _store = store;

    /// <inheritdoc/>
    public HardState? Load() => _store.State;

    /// <inheritdoc/>
    public void Save(HardState state) => _store.Save(state);

    /// <inheritdoc/>
    public void Dispose() { }
}
