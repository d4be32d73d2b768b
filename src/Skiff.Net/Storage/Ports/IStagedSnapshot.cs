namespace Skiff.Net.Storage.Ports;

/// <summary>A snapshot being received from a leader.</summary>
internal interface IStagedSnapshot : IDisposable
{
    /// <summary>Adds the next bytes.</summary>
    void Write(ReadOnlySpan<byte> chunk);

    /// <summary>All bytes arrived: makes them durable and returns the name the reducer will pass back in
    /// InstallSnapshot.</summary>
    string Finish();
}
