// vtk.js ships no types for its marching cubes filter: the part of it surfaces.ts uses.
declare module "@kitware/vtk.js/Filters/General/ImageMarchingCubes" {
  import type vtkImageData from "@kitware/vtk.js/Common/DataModel/ImageData";
  import type vtkPolyData from "@kitware/vtk.js/Common/DataModel/PolyData";

  export interface vtkImageMarchingCubes {
    setInputData(image: vtkImageData): void;
    getOutputData(): vtkPolyData;
  }

  const vtkImageMarchingCubes: {
    newInstance(options: { contourValue: number; computeNormals: boolean; mergePoints: boolean }): vtkImageMarchingCubes;
  };
  export default vtkImageMarchingCubes;
}
