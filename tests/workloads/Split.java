/*
 * Ground truth for JIT profiles: driver() alternates burnThree (3 units of
 * work per round) and burnOne (1 unit), both through spin(), in rounds of
 * varying length, so on-CPU time splits 3:1 between them.
 * usage: java -XX:+PreserveFramePointer -cp DIR Split SECONDS
 */
public class Split {
    static long sink;
    static void spin(int units) { for (int i = 0; i < units * 20000; i++) sink += i; }
    static void burnThree(int units) { spin(3 * units); }
    static void burnOne(int units) { spin(units); }
    static void driver(double seconds) {
        long end = System.nanoTime() + (long) (seconds * 1e9);
        int seed = 1;
        while (System.nanoTime() < end) {
            seed = (seed * 1103515245 + 12345) & 0x7fffffff;
            int units = 1 + seed % 8;
            burnThree(units);
            burnOne(units);
        }
    }
    public static void main(String[] args) { driver(Double.parseDouble(args[0])); }
}
